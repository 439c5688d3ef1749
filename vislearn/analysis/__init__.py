"""What we measure about models, without training them.

- ``attention``: [CLS] maps, rollout, mean attention distance, position similarity;
- ``evaluation``: weighted k-NN on features, attention as segmentation masks, Jaccard;
- ``scaling``: time and peak memory against sequence length, power-law fits, crossovers.
"""
