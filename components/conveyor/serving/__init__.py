"""A local model server speaking the TensorFlow Serving REST API (`conveyor serve`).

The request limits live here, import-light, so the command line can show them as defaults.
"""

MAX_BODY_BYTES = 16 * 1024 * 1024  # a request body over this gets 413, before any parsing
MAX_INSTANCES = 10_000  # rows per request; bigger batches belong to batch prediction
