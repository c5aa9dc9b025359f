"""Streamlit apps over interp results directories (`interp app`)."""
