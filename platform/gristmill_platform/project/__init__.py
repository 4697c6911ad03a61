"""What an environment says about itself to clients: its project settings (the step
defaults) and its identity (craft-ai-sdk 0.74's project-information and environment-info),
and the answers for what a self-hosted environment does not run."""
