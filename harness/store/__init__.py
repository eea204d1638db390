"""Where results live: the record tables' columns (``schema``), the SQLite store (``sqlite``)
and joining stores (``merge``)."""
