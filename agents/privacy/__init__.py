"""What a customer may ask of ecrm: to be erased, to see their data, to give or refuse consent."""
