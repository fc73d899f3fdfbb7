"""digits: a Flower App for the platform's federation (the handwritten digits bundled with scikit-learn)."""
