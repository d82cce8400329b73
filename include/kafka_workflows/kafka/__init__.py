"""Kafka client plumbing shared by every room: configuration, the one KafkaError unwrapper,
topic administration, producers, the transactional producer's rules, and partition readers."""
