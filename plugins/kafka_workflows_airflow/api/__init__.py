"""The plugin's FastAPI app: a JSON API over `kafka_workflows.monitor` and the pages that use it."""

PREFIX = "/kafka-workflows"  # where the plugin mounts the app under the API server
