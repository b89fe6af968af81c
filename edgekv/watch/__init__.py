"""Watches: the change log as a feed clients follow, resumable at any PoP.

``kinds``   what a watch follows: a filter and an encoder per kind of change
``hub``     the live tail, read in rounds and written to every watcher's connection
``frames``  SSE frames, the position their ids name, the connection (``Sink``)
``stream``  one watch stream: catch-up (snapshot, resume), joining the tail, its end
"""
