# Stage: fmri
