"""digits: a Flower App for the platform's federation (scikit-learn's digits data)."""
