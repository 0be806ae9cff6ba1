"""The local stack: the chat API's Lambda handler served over HTTP with the embedded adapters."""
