"""A local model server speaking the TensorFlow Serving REST API (`conveyor serve`)."""
