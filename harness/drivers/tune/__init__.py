"""``batchbench tune``: the search (``policy``, pure) and its run through the harness (``runner``)."""
