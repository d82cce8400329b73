"""Schemas through a schema registry: Avro, Protobuf and JSON Schema, declared per topic in a spec.

registry.py  the registry as a connection (URL, auth, auto_register), from the environment the same
             way as Kafka's (`AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT`), or from an Airflow connection
codec.py     one topic's codec: check a request against its schema naming the field, encode it in
             the registry's wire format, decode a record once at a worker's boundary
resolve.py   a spec's `topics: {<topic>: {schema: ...}}` made codecs (files read next to the spec)
check.py     `kafka-workflows validate --registry`: every spec's schemas against the registry's rule

Needs confluent-kafka's extras (`pip install kafka-workflows[schemas]`); imported only when a spec
declares a schema, so without `schema:` nothing changes.
"""
