"""Chat adapters: each turns platform events into coach calls and messages into platform output."""
