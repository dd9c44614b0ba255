"""The structure of the KEDA resources deploy/k8s uses (keda.sh/v1alpha1
``ScaledObject`` and ``TriggerAuthentication``), written out from KEDA's
CRDs for the fields used here, so that a misspelt or misplaced field fails
as it would when KEDA's API server refused it. Not KEDA's whole schema:
``additionalProperties: false`` also refuses fields it has that this
repository does not use (add them here when it does)."""

from __future__ import annotations

from typing import Any

STRING = {"type": "string", "minLength": 1}
COUNT = {"type": "integer", "minimum": 0}

# KEDA's RabbitMQ scaler: its metadata keys, all strings.
RABBITMQ_METADATA = {
    "type": "object",
    "required": ["queueName", "mode", "value"],
    "additionalProperties": False,
    "properties": {
        "host": STRING,
        "queueName": STRING,
        "mode": {"enum": ["QueueLength", "MessageRate"]},
        "value": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "activationValue": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "protocol": {"enum": ["amqp", "http", "auto"]},
        "vhostName": {"type": "string"},
        "excludeUnacknowledged": {"enum": ["true", "false"]},
        "useRegex": {"enum": ["true", "false"]},
        "timeout": {"type": "string", "pattern": "^[0-9]+$"},
    },
}

SCALED_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"name": STRING, "kind": STRING, "apiVersion": STRING,
                                   "envSourceContainerName": STRING},
                },
                "pollingInterval": COUNT,
                "cooldownPeriod": COUNT,
                "initialCooldownPeriod": COUNT,
                "idleReplicaCount": COUNT,
                "minReplicaCount": COUNT,
                "maxReplicaCount": COUNT,
                "fallback": {
                    "type": "object", "required": ["failureThreshold", "replicas"], "additionalProperties": False,
                    "properties": {"failureThreshold": COUNT, "replicas": COUNT},
                },
                "advanced": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        # Its behavior is checked as the HorizontalPodAutoscaler KEDA makes of it.
                        "horizontalPodAutoscalerConfig": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"name": STRING, "behavior": {"type": "object"}},
                        },
                    },
                },
                "triggers": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                        "properties": {
                            "type": {"const": "rabbitmq"},
                            "name": STRING,
                            "metadata": RABBITMQ_METADATA,
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {
                                "type": "object", "required": ["name"], "additionalProperties": False,
                                "properties": {"name": STRING,
                                               "kind": {"enum": ["TriggerAuthentication",
                                                                 "ClusterTriggerAuthentication"]}},
                            },
                        },
                    },
                },
            },
        },
    },
}

TRIGGER_AUTHENTICATION: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object", "additionalProperties": False, "minProperties": 1,
            "properties": {
                "secretTargetRef": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["parameter", "name", "key"], "additionalProperties": False,
                        "properties": {"parameter": STRING, "name": STRING, "key": STRING},
                    },
                },
            },
        },
    },
}

SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
           ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION}
