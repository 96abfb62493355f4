"""Kafka wiring: the faust app, topic declarations and the Tansu compatibility shim."""
