"""llm_svc: the language-model service (LanguageModelService/StreamChat over a ChatModel engine)."""
