"""The radix tree a view shows: the event mirror (``mirror``), its tree (``radix``) and snapshots."""
