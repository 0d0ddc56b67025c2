"""The model lifecycle: train for deployment, validate (the gate), promote and roll back. No Flask here."""
