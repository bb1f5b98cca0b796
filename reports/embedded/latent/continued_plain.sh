#!/bin/bash
# the latent DiT/2 study arm continued with the plain loss (λ = 0), 20 minutes
exec env LAMBDA=0 BUDGET=1200 $HOME/.cache/classndiff/runs/s11-latent-long.sh --output-dir $HOME/.cache/classndiff/runs/s11-latent-plain --set train.learning_rate=0.0002 --set train.warmup_steps=50
