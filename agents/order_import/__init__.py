"""A shop's order history (Taobao/Tmall exports, CSV with a mapping, JSON Lines) as order events."""
