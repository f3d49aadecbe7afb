"""The HTTP gateway: validate, publish with confirms, answer once the broker has the message."""
