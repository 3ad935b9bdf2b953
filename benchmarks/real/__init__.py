"""The real-data benchmark, one module per task kind (see ``benchmarks/real_data.py``)."""
