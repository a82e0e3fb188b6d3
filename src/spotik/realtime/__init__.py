"""Real time: the WebSocket gateway at ``/ws``, its connection registry and queues, and fan-out across instances."""
