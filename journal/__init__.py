"""The journal: the one owner of MongoDB, its exports and the dispatcher inbox."""
