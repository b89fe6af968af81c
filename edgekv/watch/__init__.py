"""Watches: the change log as a feed clients follow, resumable at any PoP.

``kinds``   what a watch follows: a filter and an encoder per kind of change
``hub``     the live tail, read once per commit and fanned out to watchers
``stream``  one watch stream: catch-up (snapshot, resume), the tail, heartbeats
"""
