"""Clustering several brokers over NATS JetStream: the topic ↔ subject mapping
(`subjects`), the `[cluster]` table's connection to NATS (`nats_connection`)."""
