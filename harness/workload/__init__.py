"""What is trained: data sets (``datasets``) and models (``models``, with the realistic
built-ins in ``architectures``), as plain tensors and ``nn.Module``s; nothing here times."""
