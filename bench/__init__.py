"""`make bench`: hareway raced against a bare aio-pika publisher and a naive gateway."""
