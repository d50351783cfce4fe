"""The local Hub server (`hub serve`): the Hub's HTTP protocol as huggingface_hub speaks it, over folders or virtual
repos (`store`), with request accounting (`traffic`) and fault injection (`faults`)."""
