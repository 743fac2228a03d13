"""Experiment grids: plan and run method x label budget x seed (x ablation) runs, then report them."""
