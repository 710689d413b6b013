"""Domain XML templates (``*.xml.j2``), their loader and the XML validator."""
