# Stage: anat
