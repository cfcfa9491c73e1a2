"""The hot path's pure parts: decode -> window -> batch. No Kafka, no Prometheus here."""
