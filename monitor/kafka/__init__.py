"""Apache Kafka for castwatch: the local broker for development, the demo and the tests."""
