"""The consumer runtime: receive from queues, persist, and only then acknowledge."""
