"""Linear directions in the residual stream: difference-in-means and logistic probes per layer (`directions`),
activations at chosen hooks and positions (`activations`), steering and directional ablation hooks (`steering`).
Prompts are encoded and padded by the data layer (`interp.data.tokens`), statements and instructions read by
`interp.data.datasets`."""

from probes.directions import LinearProbe, cosine, diff_in_means, logistic_probe, mass_mean_probe, unit
from probes.steering import ablate_hooks, add_hooks, project_out

__all__ = ["LinearProbe", "ablate_hooks", "add_hooks", "cosine", "diff_in_means", "logistic_probe", "mass_mean_probe",
           "project_out", "unit"]
