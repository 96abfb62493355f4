"""The thin Starlette ingress: validate, authenticate, produce to Kafka, read from Redis."""
