"""Sparse Kernel experiments: layers on a Fashion-MNIST CNN (:mod:`.fashion_mnist`, with the
shared CNN helpers in :mod:`.cnn`) and DQN on CartPole (:mod:`.rl`)."""
