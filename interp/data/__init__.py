"""The one data layer: where text becomes tokens (the BOS policy, padding and masks), where datasets are read and
written, which refusal judges exist, and which data sources (the zoo among them) supply defaults."""
