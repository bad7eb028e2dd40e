"""The data files the defaults need, installed as the package `vardbio_data` (provenance and
licences in README.md here); code finds them through vardbio.data."""
