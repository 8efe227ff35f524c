"""One small class per provider type behind one interface (`base.Channel`): send a rendered
message, say sent / failed / retry with the provider's id or the reason."""
