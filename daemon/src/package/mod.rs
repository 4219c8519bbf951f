//! Model packages: reading and validating manifest.json and the files it names (models/FORMAT.md).
