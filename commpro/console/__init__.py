"""The console page at `/`: the service's status for everyone, and in development the sandbox
console (the demo user, forms, live events, call quality)."""
