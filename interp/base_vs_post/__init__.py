"""Base vs post-trained models: TuCo (`tuco`), knowledge maps (`knowledge`), entropy neurons (`entropy`), and
truthfulness and refusal directions with their transfer (`truth`, `refusal`)."""
