"""`ecrm deliver`: every action on `ecrm.actions` rendered and sent through its channel, once
where the provider allows it, with receipts closing the funnel (docs/delivery.md)."""
