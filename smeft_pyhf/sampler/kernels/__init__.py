"""The sampler's building blocks, one job per module; the five steps are made of them.

* :mod:`.evaluation`: the one chunked evaluator (:func:`~.evaluation.evaluate_in_chunks`,
  :func:`~.evaluation.map_chunks`);
* :mod:`.nonfinite`: counting and checking a target's NaN/``±inf`` values
  (:class:`~.nonfinite.CheckedTarget`);
* :mod:`.weights`: effective sample size and weighted moments of importance weights;
* :mod:`.resampling`: drawing indices proportional to the weights;
* :mod:`.mcmc`: the adaptive Metropolis kernel;
* :mod:`.ais`: annealed importance sampling along a path of density components;
* :mod:`.schedules`: the inverse-temperature schedules of the annealing;
* :mod:`.standardisation`: the target in the flow's standardised coordinates.

Every kernel is batched over points, follows the device and dtype of its inputs and takes its
randomness from an explicit ``torch.Generator``.
"""
