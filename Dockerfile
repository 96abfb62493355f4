# One image for every role: `payments ingress`, `payments worker`, `payments sandbox`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY gateways gateways
COPY schemas schemas
COPY streams streams
COPY tables tables
COPY agents agents
COPY ingress ingress
COPY payments payments
RUN pip install --no-cache-dir .
RUN useradd --create-home payments && mkdir -p /data && chown payments /data
USER payments
ENV PAYMENTS_DATA_DIR=/data
ENTRYPOINT ["payments"]
