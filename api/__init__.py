"""The stateless Starlette API: validates requests, keeps job records in Redis, enqueues work.

It never imports qiskit (a unit test checks), so it starts in well under a second.
"""
