"""icl_iwl: how language models learn new knowledge in context vs in weights."""
