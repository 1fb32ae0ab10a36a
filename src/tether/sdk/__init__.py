"""The SDK: apps, the Context, and the endpoint that serves an app to the runtime."""
