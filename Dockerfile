# The gatewayz image: one image for every role; the command picks the role
# (`serve`, `ingress`, `worker --provider P`, `billing`, `migrate`, `keys create`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package is built from (tests, loadtests and .venv stay out).
COPY pyproject.toml README.md ./
COPY schema ./schema
COPY scheduler ./scheduler
COPY workers ./workers
COPY billing ./billing
COPY ingress ./ingress
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/gatewayz gatewayz
USER gatewayz
WORKDIR /var/lib/gatewayz
# Embedded data (SQLite, a generated key secret) when no service URLs are set.
ENV GATEWAYZ_DATA_DIR=/var/lib/gatewayz/data

EXPOSE 8000
ENTRYPOINT ["gatewayz"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
