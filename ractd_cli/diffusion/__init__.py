"""Pure diffusion math: EDM schedule/preconditioning/loss, samplers, and the CTM/RACTD student.

References: EDM = Karras et al. 2022; CTM = Kim et al. 2023; RACTD = Duan et al. 2025.
Nothing here knows about environments or datasets.
"""

from .ctm import (
    CHAIN_SIGMAS,
    DSM_XI_MAX,
    MAX_TEACHER_STEPS,
    S_EMBED_FLOOR,
    STUDENT_SIGMA_MIN,
    CTMPrecond,
    ctm_loss,
    ctm_sample,
    dsm_loss,
    one_step_jumps,
    pair_loss,
    ractd_loss,
    reward_loss,
    sample_ctm_times,
    sample_dsm_sigma,
    stop_gradient,
    student_from_teacher,
    student_sigmas,
    teacher_sigmas,
    teacher_solve,
)
from .edm import (
    DISTANCES,
    NUM_BINS,
    P_MEAN,
    P_STD,
    RHO,
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
    EDMPrecond,
    add_noise,
    append_dims,
    append_zero,
    batch_sigma,
    c_noise,
    clean_distance,
    denoising_distance,
    edm_loss,
    edm_scalings,
    karras_sigmas,
    loss_weight,
    pseudo_huber,
    pseudo_huber_c,
    sample_training_sigma,
    training_denoise,
)
from .samplers import (
    SAMPLERS,
    StackedRandomGenerator,
    ancestral_sample,
    ancestral_step_sigmas,
    euler_sample,
    euler_step,
    heun_sample,
    heun_step,
    randn,
    randn_like,
    to_d,
)

__all__ = [
    # edm
    "SIGMA_MIN", "SIGMA_MAX", "SIGMA_DATA", "RHO", "P_MEAN", "P_STD", "NUM_BINS", "DISTANCES",
    "karras_sigmas", "append_zero", "edm_scalings", "c_noise", "loss_weight", "pseudo_huber",
    "pseudo_huber_c", "sample_training_sigma", "add_noise", "denoising_distance", "clean_distance", "EDMPrecond", "edm_loss",
    "training_denoise", "batch_sigma", "append_dims",
    # samplers
    "SAMPLERS", "StackedRandomGenerator", "randn", "randn_like", "heun_sample", "euler_sample", "ancestral_sample", "heun_step", "euler_step",
    "ancestral_step_sigmas", "to_d",
    # ctm / ractd
    "CTMPrecond", "student_from_teacher", "stop_gradient", "student_sigmas", "sample_dsm_sigma",
    "teacher_sigmas", "ctm_sample", "teacher_solve", "sample_ctm_times", "ctm_loss", "dsm_loss",
    "reward_loss", "ractd_loss", "pair_loss", "S_EMBED_FLOOR", "MAX_TEACHER_STEPS", "STUDENT_SIGMA_MIN",
    "CHAIN_SIGMAS", "DSM_XI_MAX", "one_step_jumps",
]
